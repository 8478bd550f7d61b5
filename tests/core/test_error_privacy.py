"""A failed record's error keeps what describes the failure, never the request echoed back, never a key.

The exceptions here have the duck-typed shape of the openai/anthropic SDKs' status errors (`status_code`,
`body`, and a message that holds the body verbatim, as the SDKs build it); tests/sdk/test_sdk_error_privacy.py
raises the real ones.
"""

from __future__ import annotations

from typing import Any

import pytest

import tokenspy
from tokenspy_core import Call, Tracker

KEY = "sk-proj-LEAKYKEY1234567890abcdef"
PROMPT = "ZEBRAPROMPT my medical question"
REQUEST = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]}


class StatusError(Exception):
    """Like the SDKs' `APIStatusError`: "Error code: N - {body}" as the message, the decoded body apart."""

    def __init__(self, status_code: int, body: Any) -> None:
        super().__init__(f"Error code: {status_code} - {body}")
        self.status_code = status_code
        self.body = body


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


def error_of(tracker: Tracker, error: BaseException) -> str | None:
    record = Call(tracker, "gpt-4o", prompt=REQUEST["messages"]).fail(error)
    assert record is not None
    return record.error


@pytest.mark.parametrize(("body", "expected"), [
    # OpenAI's 401, as the openai SDK hands it over (the inner "error" object).
    ({"message": f"Incorrect API key provided: {KEY}. You can find your API key at "
                 "https://platform.openai.com/account/api-keys.",
      "type": "invalid_request_error", "param": None, "code": "invalid_api_key"},
     "Error code: 401 - invalid_api_key: Incorrect API key provided: [REDACTED]. You can find your API key at "
     "https://platform.openai.com/account/api-keys."),
    # The same, undecoded by an SDK that keeps the whole JSON.
    ({"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error",
                "code": "invalid_api_key"}},
     "Error code: 401 - invalid_api_key: Incorrect API key provided: [REDACTED]."),
    # Anthropic's.
    ({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"},
      "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
     "Error code: 401 - authentication_error: invalid x-api-key"),
    # A gateway's key in a non-OpenAI prefix, and a numeric code that only repeats the status (LiteLLM).
    ({"error": {"message": "Authentication Error, Invalid proxy server token passed. "
                           "key=88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                "type": "auth_error", "param": "None", "code": "401"}},
     "Error code: 401 - auth_error: Authentication Error, Invalid proxy server token passed. key=[REDACTED]"),
])
def test_status_error_keeps_the_provider_description_without_the_key(
        tracker: Tracker, body: Any, expected: str) -> None:
    assert error_of(tracker, StatusError(401, body)) == f"StatusError: {expected}"


def test_fastapi_422_keeps_loc_msg_and_type_never_the_echoed_input(tracker: Tracker) -> None:
    body = {"detail": [
        {"type": "value_error", "loc": ["body", "messages", 0, "content"], "msg": "Value error, content flagged",
         "input": PROMPT, "ctx": {"error": {}}},
        {"type": "extra_forbidden", "loc": ["body", "foo"], "msg": "Extra inputs are not permitted",
         "input": REQUEST},
    ]}
    error = error_of(tracker, StatusError(422, body))
    assert error == ("StatusError: Error code: 422 - body.messages.0.content: Value error, content flagged "
                     "(value_error); body.foo: Extra inputs are not permitted (extra_forbidden)")


def test_a_long_validation_list_keeps_the_first_five(tracker: Tracker) -> None:
    body = {"detail": [{"type": "missing", "loc": ["body", f"f{i}"], "msg": "Field required", "input": REQUEST}
                       for i in range(7)]}
    error = error_of(tracker, StatusError(422, body))
    assert error == ("StatusError: Error code: 422 - " + "; ".join(
        f"body.f{i}: Field required (missing)" for i in range(5)) + "; and 2 more")


@pytest.mark.parametrize("body", [
    f"upstream rejected {REQUEST}",  # plain text: nothing says which part describes the error
    "<html><title>502 Bad Gateway</title></html>",
    {"request": REQUEST, "ok": False},  # JSON of no known error shape
    None,  # the body could not be read
])
def test_a_body_of_no_known_error_shape_keeps_only_the_status(tracker: Tracker, body: Any) -> None:
    assert error_of(tracker, StatusError(502, body)) == "StatusError: Error code: 502"


def test_a_json_body_left_as_text_is_read_as_json(tracker: Tracker) -> None:
    body = '{"object": "error", "message": "Invalid model", "type": "invalid_model", "code": "1500"}'
    assert error_of(tracker, StatusError(400, body)) == "StatusError: Error code: 400 - invalid_model: Invalid model"


def test_an_error_event_in_a_200_stream_shows_no_status(tracker: Tracker) -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert error_of(tracker, StatusError(200, body)) == "StatusError: overloaded_error: Overloaded"


def test_transport_errors_keep_their_message_with_keys_redacted(tracker: Tracker) -> None:
    assert error_of(tracker, TimeoutError("read timed out")) == "TimeoutError: read timed out"
    error = ConnectionError(f"refused https://gw.test/v1?key={KEY}")
    assert error_of(tracker, error) == "ConnectionError: refused https://gw.test/v1?key=[REDACTED]"


def test_capture_content_keeps_the_whole_message_but_never_the_key(tracker: Tracker) -> None:
    body = {"message": f"Incorrect API key provided: {KEY}. Request: {REQUEST}", "type": "invalid_request_error"}
    tokenspy.init(capture_content=True)
    try:
        error = error_of(tracker, StatusError(401, body))
    finally:
        tokenspy.init()
    assert error is not None and PROMPT in error and "LEAKYKEY" not in error
    redacted = {**body, "message": f"Incorrect API key provided: [REDACTED]. Request: {REQUEST}"}
    assert error == f"StatusError: Error code: 401 - {redacted}"


@pytest.mark.parametrize(("text", "expected"), [
    ("Incorrect API key provided: sk-proj-****************************************abcd.",
     "Incorrect API key provided: [REDACTED]."),
    ("x-api-key sk-ant-api03-LEAKYANTKEY99 is invalid", "x-api-key [REDACTED] is invalid"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x1", "Authorization: Bearer [REDACTED]"),
    ("GET /v1beta/models?key=AIzaSyA1234567890abcdefghijklmnopqrstu&alt=sse",
     "GET /v1beta/models?key=[REDACTED]&alt=sse"),
    ("{'api_key': 'gw-7f3a9c2e1b'}", "{'api_key': '[REDACTED]'}"),
    ("Your API key 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c is wrong", "Your API key [REDACTED] is wrong"),
    # Not keys: words and token counts stay.
    ("invalid_api_key: Incorrect API key", "invalid_api_key: Incorrect API key"),
    ("'max_tokens': 4096, 'total_tokens': 12345678", "'max_tokens': 4096, 'total_tokens': 12345678"),
    ("find your API key at https://platform.openai.com/account/api-keys.",
     "find your API key at https://platform.openai.com/account/api-keys."),
    ("task-1234567890 failed", "task-1234567890 failed"),
])
def test_redact_keys(text: str, expected: str) -> None:
    from tokenspy_core.errors import redact_keys

    assert redact_keys(text) == expected


def test_a_message_given_as_text_is_kept_without_the_key(tracker: Tracker) -> None:
    # An adapter's own text (a Responses `response.failed` event) or the user's `fail("...")`.
    record = Call(tracker, "gpt-4o").fail("server_error: upstream rejected key sk-proj-abcdef0123456789xyz")
    assert record is not None and record.error == "server_error: upstream rejected key [REDACTED]"
