"""A misspelt setting is refused wherever it is written, as a misspelt flag is, so a typo cannot
silently test nothing: `POST /_config` / `/_reset` answer 400 and change nothing; the Python side
raises where the bad name or value is written."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tokenspy.testing import DEFAULT_REPLY, SETTINGS, FakeProvider

KNOWN = "known: ['cache_write_tokens', 'cached_tokens', 'chunk_delay', 'flags', 'reasoning_tokens', 'reply']"


def post(fp: FakeProvider, path: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(fp.base_url + path, data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_config_with_a_misspelt_key_is_a_400_naming_it_and_changes_nothing(fake_provider: FakeProvider) -> None:
    status, body = post(fake_provider, "/_config", {"reply": "Hi.", "cached_tokenz": 3})
    assert status == 400
    assert body["error"]["message"] == f"unknown fake-provider setting(s) ['cached_tokenz']; {KNOWN}"
    assert (fake_provider.reply, fake_provider.cached_tokens) == (DEFAULT_REPLY, 0)

    fake_provider.set_flags("slow")
    assert post(fake_provider, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})[0] == 200
    status, body = post(fake_provider, "/_reset", {"flag": "cut"})
    assert status == 400 and "['flag']" in body["error"]["message"]
    assert len(fake_provider.requests) == 1 and fake_provider.flags == {"slow"}  # the reset did not happen


@pytest.mark.parametrize(("settings", "message"), [
    ({"cached_tokens": -1}, "cached_tokens must be >= 0, got -1"),
    ({"reasoning_tokens": 1.5}, "reasoning_tokens must be an int, got float"),
    ({"cache_write_tokens": True}, "cache_write_tokens must be an int, got bool"),
    ({"chunk_delay": "0.1"}, "chunk_delay must be a number, got str"),
    ({"reply": None}, "reply must be a str, got NoneType"),
    ({"flags": 3}, "flags must be a string or a list of strings, got int"),
    ({"flags": ["slow", 3]}, "flags must be strings, got int"),
    ({"flags": "slow", "cached_tokens": -1}, "cached_tokens must be >= 0, got -1"),
])
def test_config_with_a_bad_value_is_a_400_naming_it_and_changes_nothing(
        fake_provider: FakeProvider, settings: dict[str, Any], message: str) -> None:
    assert post(fake_provider, "/_config", settings) == (400, {"error": {"message": message}})
    assert fake_provider.flags == frozenset() and fake_provider.cached_tokens == 0


def test_config_takes_every_setting_it_names() -> None:
    settings = {"flags": ["slow"], "reply": "Hi.", "cached_tokens": 1, "cache_write_tokens": 2,
                "reasoning_tokens": 3, "chunk_delay": 0.5}
    assert sorted(settings) == sorted(SETTINGS)
    with FakeProvider() as fp:
        assert post(fp, "/_config", settings) == (200, {"ok": True, "flags": ["slow"]})
        assert (fp.flags, fp.reply, fp.cached_tokens, fp.cache_write_tokens, fp.reasoning_tokens,
                fp.chunk_delay) == ({"slow"}, "Hi.", 1, 2, 3, 0.5)


def test_python_side_refuses_unknown_names_and_bad_values_where_they_are_written() -> None:
    with pytest.raises(TypeError, match="cached_tokenz"):
        FakeProvider(cached_tokenz=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="cached_tokens must be an int, got float"):
        FakeProvider(cached_tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"chunk_delay must be >= 0, got nan"):
        FakeProvider(chunk_delay=float("nan"))
    fp = FakeProvider()
    with pytest.raises(AttributeError, match="cached_tokenz"):
        fp.cached_tokenz = 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="reasoning_tokens must be >= 0, got -2"):
        fp.reasoning_tokens = -2
    with pytest.raises(TypeError, match="reply must be a str, got bytes"):
        fp.reply = b"Hi."  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"unknown fake-provider setting\(s\) \['cached_tokenz'\]"):
        fp.configure({"reply": "Hi.", "cached_tokenz": 3})
    with pytest.raises(TypeError, match="flags must be strings, got int"):
        fp.set_flags(3)  # type: ignore[arg-type]
    assert (fp.reply, fp.cached_tokens, fp.reasoning_tokens) == (DEFAULT_REPLY, 0, 0)
    fp.cached_tokens, fp.chunk_delay = 5, 1  # an int delay is a number of seconds too
    fp.configure({"flags": "slow,fulldelta", "cache_write_tokens": 2})
    assert (fp.cached_tokens, fp.cache_write_tokens, fp.chunk_delay, fp.flags) == (5, 2, 1, {"slow", "fulldelta"})
