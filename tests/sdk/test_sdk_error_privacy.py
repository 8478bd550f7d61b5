"""Real openai/anthropic clients answered with real error bodies that echo the key or the prompt: the failed
record says what went wrong, and neither the key nor the prompt reaches calls(), stats(), the JSON report,
the SQLite row or `tokenspy history` (default settings: no content capture)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

import tokenspy
from tokenspy.cli import main as cli_main
from tokenspy_core import default_tracker, store
from tokenspy_core.store import attach_store

KEY = "sk-proj-LEAKYKEY1234567890abcdef"
ANTHROPIC_KEY = "sk-ant-api03-LEAKYANTKEY99"
PROMPT = "ZEBRAPROMPT my medical question"
MESSAGES = [{"role": "user", "content": PROMPT}]
# What must appear nowhere: the keys (also in part) and the prompt.
SECRETS = ("LEAKYKEY", "LEAKYANTKEY", "ZEBRAPROMPT")

OPENAI_401 = {"error": {
    "message": f"Incorrect API key provided: {KEY}. You can find your API key at "
               "https://platform.openai.com/account/api-keys.",
    "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
OPENAI_401_TEXT = ("AuthenticationError: Error code: 401 - invalid_api_key: Incorrect API key provided: [REDACTED]. "
                   "You can find your API key at https://platform.openai.com/account/api-keys.")
ANTHROPIC_401 = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                 "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
ANTHROPIC_401_TEXT = "AuthenticationError: Error code: 401 - authentication_error: invalid x-api-key"
UNPROCESSABLE_TEXT = ("UnprocessableEntityError: Error code: 422 - body.tenant: Extra inputs are not permitted "
                      "(extra_forbidden)")


def fastapi_422(request_body: bytes) -> dict[str, Any]:
    """What a FastAPI-based OpenAI-compatible gateway (vLLM, LiteLLM, LocalAI) answers a request its pydantic
    model refuses: the failing part of the request, here the whole body, as `input`."""
    return {"detail": [{"type": "extra_forbidden", "loc": ["body", "tenant"], "msg": "Extra inputs are not permitted",
                        "input": json.loads(request_body)}]}


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    store.close_all()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    attach_store(default_tracker(), path)
    return path


def openai_client(answer: Callable[[httpx.Request], httpx.Response]) -> openai.OpenAI:
    return tokenspy.observe(openai.OpenAI(api_key=KEY, base_url="https://gw.test/v1", max_retries=0,
                                          http_client=httpx.Client(transport=httpx.MockTransport(answer))))


def anthropic_client(answer: Callable[[Any], Any]) -> anthropic.Anthropic:
    import httpx2

    return tokenspy.observe(anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url="https://gw.test", max_retries=0,
                                                http_client=httpx2.Client(transport=httpx2.MockTransport(answer))))


def written_everywhere(db: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Every place a record's error goes, as text."""
    for opened in store.stores():
        opened.flush()
    with sqlite3.connect(db) as conn:
        rows = repr(conn.execute("SELECT * FROM calls").fetchall())
    capsys.readouterr()
    assert cli_main(["history", "--db", str(db)]) == 0
    return {"calls()": repr(tokenspy.calls()), "stats()": json.dumps(tokenspy.stats(), default=str),
            "report(format='json')": tokenspy.report(format="json"), "sqlite": rows,
            "tokenspy history": capsys.readouterr().out}


def assert_nowhere(places: dict[str, str]) -> None:
    leaks = {where: [secret for secret in SECRETS if secret in text] for where, text in places.items()}
    assert leaks == {where: [] for where in places}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_401_keeps_the_description_not_the_key(
        db: Path, capsys: pytest.CaptureFixture[str], stream: bool) -> None:
    client = openai_client(lambda request: httpx.Response(401, json=OPENAI_401))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream)  # type: ignore[call-overload]
    (record,) = tokenspy.calls()
    assert (record.status, record.error) == ("failed", OPENAI_401_TEXT)
    places = written_everywhere(db, capsys)
    assert OPENAI_401_TEXT in places["sqlite"] and OPENAI_401_TEXT in places["report(format='json')"]
    assert_nowhere(places)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_compatible_gateway_422_keeps_what_failed_not_the_echoed_request(
        db: Path, capsys: pytest.CaptureFixture[str], stream: bool) -> None:
    client = openai_client(lambda request: httpx.Response(422, json=fastapi_422(request.content)))
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream,  # type: ignore[call-overload]
                                       extra_body={"tenant": "acme"})
    (record,) = tokenspy.calls()
    assert (record.status, record.error) == ("failed", UNPROCESSABLE_TEXT)
    assert_nowhere(written_everywhere(db, capsys))


def test_anthropic_401_and_gateway_422(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import httpx2

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.headers.get("x-case") == "422":
            return httpx2.Response(422, json=fastapi_422(request.content))
        return httpx2.Response(401, json=ANTHROPIC_401)

    client = anthropic_client(answer)
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    with (pytest.raises(anthropic.UnprocessableEntityError),
          client.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES,  # type: ignore[arg-type]
                                 extra_headers={"x-case": "422"}, extra_body={"tenant": "acme"}) as stream):
        stream.until_done()
    assert [(r.status, r.error) for r in tokenspy.calls()] == [("failed", ANTHROPIC_401_TEXT),
                                                               ("failed", UNPROCESSABLE_TEXT)]
    assert_nowhere(written_everywhere(db, capsys))


def test_capture_content_keeps_the_whole_message_but_never_the_key(
        db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenspy.init(capture_content=True)
    client = openai_client(lambda request: httpx.Response(401, json=OPENAI_401))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    (record,) = tokenspy.calls()
    assert record.error == ("AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key provided: "
                            "[REDACTED]. You can find your API key at https://platform.openai.com/account/api-keys.', "
                            "'type': 'invalid_request_error', 'param': None, 'code': 'invalid_api_key'}}")
    places = written_everywhere(db, capsys)
    assert PROMPT in places["sqlite"]  # captured on purpose, in the prompt column
    assert [where for where, text in places.items() if "LEAKYKEY" in text] == []
