"""One normalized `Usage`, and converters from every shape providers and frameworks report.

Semantics (the same for every provider):
- `input_tokens`: every prompt token processed, cached reads and cache writes included.
- `output_tokens`: every generated token, reasoning included.
- `cached_input_tokens`, `cache_write_tokens`, `reasoning_tokens`: subsets of the above.
- `cache_write_1h_tokens`: the subset of cache writes with Anthropic's 1-hour TTL (its own price).

A `UsageReport` is what one layer saw: each field is `None` when that layer did not report it, so a
call can merge reports field by field ("latest reported value wins") without ever adding cumulative
numbers twice.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from ._guard import logger, warn_user

__all__ = [
    "FIELDS",
    "MAX_TOKENS",
    "Usage",
    "UsageReport",
    "field_of",
    "provider_usage",
    "usage_from_anthropic",
    "usage_from_any",
    "usage_from_gemini",
    "usage_from_langchain",
    "usage_from_openai",
]


@dataclass(slots=True, frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )


@dataclass(slots=True)
class UsageReport:
    """Usage as one layer reported it; `None` means "not reported", never zero."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_1h_tokens: int | None = None

    def update(self, newer: UsageReport) -> None:
        """Take every field `newer` reports: providers repeat cumulative totals, so never add."""
        # Unrolled over FIELDS (hot path: once per usage report); keep in sync with the fields above.
        value = newer.input_tokens
        if value is not None:
            self.input_tokens = value
        value = newer.output_tokens
        if value is not None:
            self.output_tokens = value
        value = newer.cached_input_tokens
        if value is not None:
            self.cached_input_tokens = value
        value = newer.cache_write_tokens
        if value is not None:
            self.cache_write_tokens = value
        value = newer.reasoning_tokens
        if value is not None:
            self.reasoning_tokens = value
        value = newer.cache_write_1h_tokens
        if value is not None:
            self.cache_write_1h_tokens = value

    def fill(self, other: UsageReport) -> None:
        """Take the fields `other` reports and this one does not."""
        for name in FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, getattr(other, name))

    def copy(self) -> UsageReport:
        return UsageReport(self.input_tokens, self.output_tokens, self.cached_input_tokens, self.cache_write_tokens,
                           self.reasoning_tokens, self.cache_write_1h_tokens)

    def is_empty(self) -> bool:
        return (self.input_tokens is None and self.output_tokens is None and self.cached_input_tokens is None
                and self.cache_write_tokens is None and self.reasoning_tokens is None
                and self.cache_write_1h_tokens is None)


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(UsageReport))
if FIELDS != ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
              "reasoning_tokens", "cache_write_1h_tokens"):  # pragma: no cover - a guard for editors
    raise AssertionError("UsageReport.update, copy and is_empty are unrolled over FIELDS: add the new field there")


# Types already found not to be Mappings (SDK usage objects): skip the ABC check for them. Bounded,
# in case a program makes classes on the fly.
_NOT_MAPPINGS: set[type] = set()
_NOT_MAPPINGS_MAX = 256


def field_of(obj: Any, key: str) -> Any:
    """`obj[key]` of a mapping, `obj.key` of any other object, None if absent: every adapter reads
    provider and framework payloads (dicts, pydantic models, dataclasses) through this one accessor."""
    if obj is None:
        return None
    cls = type(obj)
    if cls is dict:
        return obj.get(key)
    if cls in _NOT_MAPPINGS:
        return getattr(obj, key, None)
    # dict subclasses first: a C-level check; the Mapping ABC check goes through Python-level ABCMeta.
    if isinstance(obj, (dict, Mapping)):
        return obj.get(key)
    if len(_NOT_MAPPINGS) < _NOT_MAPPINGS_MAX:
        _NOT_MAPPINGS.add(cls)
    return getattr(obj, key, None)


_get = field_of


class UsageTypeError(TypeError):
    """A usage count that is not a number of tokens (a string, a fraction of a token)."""


class UsageValueError(ValueError):
    """A negative usage count."""


# The largest token count one call can report: over a trillion. No call comes near it; past it a count
# is a gateway's garbage or a typo, which would also overflow the store's 64-bit integers. For an int
# `n`, `not n >> TOKEN_BITS` is `0 <= n <= MAX_TOKENS` in one step (a negative n shifts to -1).
TOKEN_BITS = 40
MAX_TOKENS = 2**TOKEN_BITS - 1

# Set while `provider_usage` converts a provider's usage again, leaving out the counts it rejected.
_dropping_invalid: ContextVar[bool] = ContextVar("tokenspy_dropping_invalid_counts", default=False)


def _int(value: Any) -> int | None:
    if type(value) is int and not value >> TOKEN_BITS:  # the common case: a count in range
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        number = None  # True is no number of tokens
    else:
        try:
            number = int(value)  # "12", 12.0, an int subclass
        except (TypeError, ValueError, OverflowError):
            number = None
    # Never a silent wrong number: not "x", not 1.9 read as 1, not -5.
    if number is None or (not isinstance(value, str) and number != value):
        if _dropping_invalid.get():
            return None
        raise UsageTypeError(f"a usage count must be a whole number of tokens, got {value!r}")
    if number < 0 or number > MAX_TOKENS:
        if _dropping_invalid.get():
            return None
        raise UsageValueError(f"a usage count must be between 0 and {MAX_TOKENS:,}, got {value!r}")
    return number


_R = TypeVar("_R")
_dropped_logged = False


def provider_usage(apply: Callable[[Any], _R], usage: Any) -> _R:
    """`apply(usage)` (a converter, or a call's `set_usage`) for usage a provider reported, or a
    framework relayed: a count no number of tokens can be (a gateway's -3 or 5.5) is left out, as
    unreported (so estimated), and logged once. Raised, it would lose the record of an answer the user
    got. Numbers the user passes (`set_usage`, `record`) are still refused with an error."""
    try:
        result = apply(usage)
    except (UsageTypeError, UsageValueError) as exc:
        token = _dropping_invalid.set(True)
        try:
            result = apply(usage)
        finally:
            _dropping_invalid.reset(token)
        _log_dropped(str(exc))
        return result
    report: Any = result  # (a report when `apply` is a converter; None from a call's set_usage)
    if report.__class__ is UsageReport and (report.cached_input_tokens or report.cache_write_tokens
                                            or report.reasoning_tokens or report.cache_write_1h_tokens):
        drop_impossible_parts(report)
    return result


def dropping_invalid_counts() -> bool:
    """Whether a provider's usage is being read again by `provider_usage`, leaving out what it rejected."""
    return _dropping_invalid.get()


def checked_copy(report: UsageReport | Usage) -> UsageReport:
    """A report someone built by hand (made without a check), its counts checked as the user's own
    numbers are (ints only: not "5", not 5.0), as plain ints."""
    return UsageReport(*(None if (value := getattr(report, name)) is None else user_count(name, value)
                         for name in FIELDS))


def user_count(name: str, value: Any) -> int:
    """A token count the user passes (`record`, `set_usage`, a report they built): an int (any Integral,
    returned as a plain int; not a bool, not "5", not 5.0) from 0 to MAX_TOKENS, else a clear error."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise UsageTypeError(f"{name} must be an int token count, got {value!r}")
    if value < 0 or value > MAX_TOKENS:
        raise UsageValueError(f"{name} must be between 0 and {MAX_TOKENS:,}, got {value!r}")
    return int(value)


def impossible_parts(report: UsageReport) -> str | None:
    """What is wrong with a report's parts, if anything. Cache reads and writes are part of the input,
    reasoning part of the output: a report that says otherwise would bill each cached token on top of
    a smaller whole."""
    inp, cached, written = report.input_tokens, report.cached_input_tokens or 0, report.cache_write_tokens or 0
    if inp is not None and cached + written > inp:
        return (f"cached_input_tokens + cache_write_tokens ({cached} + {written}) are part of input_tokens "
                f"({inp}) and cannot exceed it")
    out, reasoning = report.output_tokens, report.reasoning_tokens or 0
    if out is not None and reasoning > out:
        return f"reasoning_tokens ({reasoning}) are part of output_tokens ({out}) and cannot exceed it"
    if (report.cache_write_1h_tokens or 0) > written:
        return f"cache_write_1h_tokens are part of cache_write_tokens ({written}) and cannot exceed it"
    return None


def drop_impossible_parts(report: UsageReport) -> None:
    """A provider's report with `impossible_parts`: the parts are left out (the whole is kept)."""
    problem = impossible_parts(report)
    if problem is None:
        return
    _log_dropped(problem)
    inp, out = report.input_tokens, report.output_tokens
    if inp is not None and (report.cached_input_tokens or 0) + (report.cache_write_tokens or 0) > inp:
        report.cached_input_tokens = report.cache_write_tokens = report.cache_write_1h_tokens = None
    if out is not None and (report.reasoning_tokens or 0) > out:
        report.reasoning_tokens = None
    if (report.cache_write_1h_tokens or 0) > (report.cache_write_tokens or 0):
        report.cache_write_1h_tokens = None


def _log_dropped(what: str) -> None:
    global _dropped_logged
    if not _dropped_logged:
        _dropped_logged = True
        # Once per process, so it says what happens to either kind of count.
        logger.warning("tokenspy: a provider reported a usage count no number of tokens can be (%s): it is "
                       "left out; an input or output count left out is estimated, a cache or reasoning count "
                       "left out is taken as 0 beside its whole as reported", what)


def usage_from_openai(usage: Any) -> UsageReport:
    """OpenAI Chat Completions, legacy Completions, Embeddings and Responses `usage` objects or dicts.

    OpenAI's prompt/input count already includes cached tokens, and its completion/output count
    already includes reasoning tokens, so the numbers map one to one.
    """
    prompt = _get(usage, "prompt_tokens")
    if prompt is not None or _get(usage, "completion_tokens") is not None:
        return _openai_chat(usage, prompt)
    input_details = _get(usage, "input_tokens_details")
    output_details = _get(usage, "output_tokens_details")
    report = UsageReport(
        input_tokens=_int(_get(usage, "input_tokens")),
        output_tokens=_int(_get(usage, "output_tokens")),
        cached_input_tokens=_int(_get(input_details, "cached_tokens")),
        cache_write_tokens=_int(_get(input_details, "cache_write_tokens")),
        reasoning_tokens=_int(_get(output_details, "reasoning_tokens")),
    )
    if report.reasoning_tokens:
        _reasoning_beside_output(report, _get(usage, "total_tokens"))
    return report


def _reasoning_beside_output(report: UsageReport, total: Any) -> None:
    """Gemini's OpenAI-compatible endpoint (and gateways that map Gemini's usage the same way) counts
    thoughts beside the answer, not in it: `completion_tokens` is the answer alone, `reasoning_tokens`
    the thoughts, and `total_tokens` prompt + answer + thoughts, which Google bills as output. OpenAI's
    own total is prompt + completion, reasoning inside: only a total that says the reasoning is apart
    makes it so here (the output becomes answer + reasoning, reasoning its subset). Without such a
    total, a reasoning count over the output stays a part over its whole (`drop_impossible_parts`)."""
    prompt, output, reasoning = report.input_tokens, report.output_tokens, report.reasoning_tokens
    if (prompt is not None and output is not None and reasoning and type(total) is int
            and total == prompt + output + reasoning and output + reasoning <= MAX_TOKENS):
        report.output_tokens = output + reasoning


def _openai_chat(usage: Any, prompt: Any) -> UsageReport:
    if type(usage) is dict:
        return _openai_chat_dict(usage, prompt)
    prompt_details = _get(usage, "prompt_tokens_details")
    completion_details = _get(usage, "completion_tokens_details")
    completion = _get(usage, "completion_tokens")
    output = _int(completion)
    if completion is None and _get(usage, "total_tokens") is not None:
        output = 0  # a whole report without output (embeddings): nothing was generated
    # Positional, in field order: the hot path of every OpenAI-shaped report.
    cached = _get(prompt_details, "cached_tokens")
    if cached is None:
        cached = _get(usage, "prompt_cache_hit_tokens")  # DeepSeek's own name (its docs' only one)
    report = UsageReport(
        _int(prompt),  # input_tokens
        output,  # output_tokens; None in a piece that reports only the prompt: estimated if never reported
        _int(cached),  # cached_input_tokens
        _int(_get(prompt_details, "cache_write_tokens")),  # cache_write_tokens
        _int(_get(completion_details, "reasoning_tokens")),  # reasoning_tokens
    )
    if report.reasoning_tokens:
        _reasoning_beside_output(report, _get(usage, "total_tokens"))
    return report


def _openai_chat_dict(usage: dict[str, Any], prompt: Any) -> UsageReport:
    # `_openai_chat` for a plain dict (what most adapters and users pass), with the accessor and the int
    # checks inlined: this runs once per recorded OpenAI-shaped call.
    get = usage.get
    details = get("prompt_tokens_details")
    if type(details) is dict:
        cached, written = details.get("cached_tokens"), details.get("cache_write_tokens")
    else:
        cached, written = _get(details, "cached_tokens"), _get(details, "cache_write_tokens")
    if cached is None:
        cached = get("prompt_cache_hit_tokens")  # DeepSeek's own name (its docs' only one)
    details = get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if type(details) is dict else _get(details, "reasoning_tokens")
    output = get("completion_tokens")
    if output is None and get("total_tokens") is not None:
        output = 0  # a whole report without output (embeddings): nothing was generated
    report = UsageReport(
        prompt if type(prompt) is int and not prompt >> TOKEN_BITS else _int(prompt),
        output if type(output) is int and not output >> TOKEN_BITS else _int(output),
        cached if cached is None or (type(cached) is int and not cached >> TOKEN_BITS) else _int(cached),
        written if written is None or (type(written) is int and not written >> TOKEN_BITS) else _int(written),
        reasoning if reasoning is None or (type(reasoning) is int and not reasoning >> TOKEN_BITS)
        else _int(reasoning),
    )
    if reasoning:  # (a reasoning model's call: the others pay nothing more)
        _reasoning_beside_output(report, get("total_tokens"))
    return report


def is_anthropic_usage(usage: Any) -> bool:
    """An Anthropic-shaped usage: an SDK object (whose cache fields may be None in a `message_delta`), a
    dict with its cache keys (an SDK object dumped), or any usage reporting a cache read or write."""
    if type(usage) is dict:
        if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
            return True
    elif type(usage).__module__.startswith("anthropic."):
        return True
    return (_get(usage, "cache_creation_input_tokens") is not None or _get(usage, "cache_read_input_tokens") is not None
            or _get(usage, "cache_creation") is not None)


def usage_from_anthropic(usage: Any) -> UsageReport:
    """Anthropic `usage` (Message, message_start, message_delta), raw or dumped.

    Anthropic's `input_tokens` EXCLUDES cache reads and writes, so the normalized input adds them.
    A field absent from this report (e.g. a `message_delta` that carries only output) stays None.
    """
    raw_input = _int(_get(usage, "input_tokens"))
    given_read, given_write = _get(usage, "cache_read_input_tokens"), _get(usage, "cache_creation_input_tokens")
    cache_read, cache_write = _int(given_read), _int(given_write)
    creation = _get(usage, "cache_creation")
    write_1h = _int(_get(creation, "ephemeral_1h_input_tokens"))
    output_details = _get(usage, "output_tokens_details")
    total_input = _input_with_cache(raw_input, given_read, cache_read, given_write, cache_write)
    return UsageReport(
        input_tokens=total_input,
        output_tokens=_int(_get(usage, "output_tokens")),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=_int(_get(output_details, "thinking_tokens")),
        cache_write_1h_tokens=write_1h,
    )


def usage_from_langchain(usage_metadata: Any) -> UsageReport:
    """LangChain `UsageMetadata`: its `input_tokens` already includes cache reads and writes.

    Cache writes move around in langchain-anthropic: `cache_creation` when there is no TTL
    breakdown, else `ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens` (and
    `cache_creation` set to 0). Their sum is the cache-write count.
    """
    if type(usage_metadata) is dict:  # what LangChain passes: a plain dict, often without details
        get = usage_metadata.get
        details, out_details = get("input_token_details"), get("output_token_details")
        if not details and not out_details:
            inp, out = get("input_tokens"), get("output_tokens")
            return UsageReport(inp if inp.__class__ is int and not inp >> TOKEN_BITS else _int(inp),
                               out if out.__class__ is int and not out >> TOKEN_BITS else _int(out))
    else:
        details, out_details = _get(usage_metadata, "input_token_details"), _get(usage_metadata, "output_token_details")
    details = details or {}
    out_details = out_details or {}
    creation = _int(_tiered(details, "cache_creation"))
    write_5m = _int(_get(details, "ephemeral_5m_input_tokens"))
    write_1h = _int(_get(details, "ephemeral_1h_input_tokens"))
    parts = [v for v in (creation, write_5m, write_1h) if v is not None]
    report = UsageReport(
        input_tokens=_int(_get(usage_metadata, "input_tokens")),
        output_tokens=_int(_get(usage_metadata, "output_tokens")),
        cached_input_tokens=_int(_tiered(details, "cache_read")),
        cache_write_tokens=sum(parts) if parts else None,
        reasoning_tokens=_int(_tiered(out_details, "reasoning")),
        cache_write_1h_tokens=write_1h,
    )
    if report.reasoning_tokens:
        # langchain-openai passes OpenAI's counts through as they are, a Gemini-compatible endpoint's too.
        _reasoning_beside_output(report, _get(usage_metadata, "total_tokens"))
    return report


def _tiered(details: Any, key: str) -> Any:
    """`details[key]`, or langchain-openai's name for it on a call served at a service tier other
    than the default (`flex_cache_read`, `priority_reasoning`, ...)."""
    value = _get(details, key)
    if value is None and isinstance(details, Mapping):
        suffix = "_" + key
        for name, tiered in details.items():
            if isinstance(name, str) and name.endswith(suffix):
                return tiered
    return value


def usage_from_gemini(usage_metadata: Any) -> UsageReport:
    """Google Gemini `usage_metadata`: thoughts are billed as output but not in candidates."""
    candidates = _int(_get(usage_metadata, "candidates_token_count"))
    thoughts = _int(_get(usage_metadata, "thoughts_token_count"))
    output = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return UsageReport(
        input_tokens=_int(_get(usage_metadata, "prompt_token_count")),
        output_tokens=output,
        cached_input_tokens=_int(_get(usage_metadata, "cached_content_token_count")),
        reasoning_tokens=thoughts,
    )


def usage_from_any(usage: Any) -> UsageReport:
    """Recognize the shape of a usage object or dict and normalize it."""
    if type(usage) is dict:  # the common case first: an OpenAI-shaped dict
        prompt = usage.get("prompt_tokens")
        if prompt is not None or "completion_tokens" in usage:  # a piece may report only one of them
            return _openai_chat_dict(usage, prompt)
    elif usage is None:
        return UsageReport()
    if isinstance(usage, UsageReport):
        return usage
    if isinstance(usage, Usage):  # the user's own, made without a check: its counts are checked here
        return checked_copy(usage)
    if isinstance(usage, str | bytes | int | float | list | tuple | set | frozenset):
        if _dropping_invalid.get():  # relayed by a framework (a gateway's "n/a"): nothing reported
            return UsageReport()
        raise UsageTypeError(f"usage must be a usage object or dict, got {usage!r}")
    # The most common shape first (only OpenAI's has `prompt_tokens`).
    prompt = _get(usage, "prompt_tokens")
    if prompt is not None or _get(usage, "completion_tokens") is not None:
        return _openai_chat(usage, prompt)
    if _get(usage, "prompt_token_count") is not None or _get(usage, "candidates_token_count") is not None:
        return usage_from_gemini(usage)
    if _get(usage, "input_tokens_details") is not None:
        return usage_from_openai(usage)
    if is_anthropic_usage(usage):
        return usage_from_anthropic(usage)
    if _get(usage, "input_token_details") is not None or _get(usage, "output_token_details") is not None:
        return usage_from_langchain(usage)
    if any(_get(usage, key) is not None for key in _BEDROCK_KEYS):
        return _bedrock_converse(usage)
    # A bare {input_tokens, output_tokens}: no cache fields, so the raw/normalized distinction vanishes; with
    # tokenspy's own subset names (a normalized report written as a dict), those too.
    report = UsageReport(_int(_get(usage, "input_tokens")), _int(_get(usage, "output_tokens")),
                         _int(_get(usage, "cached_input_tokens")), _int(_get(usage, "cache_write_tokens")),
                         _int(_get(usage, "reasoning_tokens")), _int(_get(usage, "cache_write_1h_tokens")))
    if report.is_empty() and isinstance(usage, Mapping) and usage:
        _warn_unknown_keys(usage)
    return report


_BEDROCK_KEYS = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")


def input_excludes_cache(usage: Any) -> bool:
    """A usage shape whose input count excludes cache reads and writes: Anthropic's, Bedrock's."""
    return is_anthropic_usage(usage) or is_bedrock_usage(usage)


def is_bedrock_usage(usage: Any) -> bool:
    """Bedrock Converse's camelCase usage."""
    return any((key in usage) if type(usage) is dict else _get(usage, key) is not None for key in _BEDROCK_KEYS)


def rebase_excluded_cache(current: UsageReport, piece: UsageReport) -> None:
    """Make `piece` (normalized from a shape whose input excludes the cache) agree with the call's `current`
    report before it is merged: its input is the raw input (its own, or the one reported before) plus
    the cache reads and writes (its own, or those reported before). A `message_delta` that repeats the
    raw input without the cache fields, or a piece with only the cache counts, keeps the cache in the input."""
    if piece.input_tokens is None and (current.input_tokens is None or (
            piece.cached_input_tokens is None and piece.cache_write_tokens is None)):
        return
    cached = current.cached_input_tokens if piece.cached_input_tokens is None else piece.cached_input_tokens
    written = current.cache_write_tokens if piece.cache_write_tokens is None else piece.cache_write_tokens
    source = piece if piece.input_tokens is not None else current
    raw = (source.input_tokens or 0) - (source.cached_input_tokens or 0) - (source.cache_write_tokens or 0)
    piece.input_tokens = raw + (cached or 0) + (written or 0)


def _input_with_cache(raw_input: int | None, given_read: Any, cache_read: int | None, given_write: Any,
                      cache_write: int | None) -> int | None:
    """The whole input of a shape whose input excludes the cache. Unknown (so estimated) if a cache count
    was given but left out as impossible (`provider_usage`): the raw input alone is not the prompt."""
    if raw_input is None or (cache_read is None and given_read is not None) or (
            cache_write is None and given_write is not None):
        return None
    return raw_input + (cache_read or 0) + (cache_write or 0)


def _bedrock_converse(usage: Any) -> UsageReport:
    """AWS Bedrock Converse `usage` (camelCase): like Anthropic's, its `inputTokens` excludes the cache."""
    raw_input = _int(_get(usage, "inputTokens"))
    given_read, given_write = _get(usage, "cacheReadInputTokens"), _get(usage, "cacheWriteInputTokens")
    cache_read, cache_write = _int(given_read), _int(given_write)
    return UsageReport(
        input_tokens=_input_with_cache(raw_input, given_read, cache_read, given_write, cache_write),
        output_tokens=_int(_get(usage, "outputTokens")),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


_KNOWN_KEYS = frozenset({"input_tokens", "output_tokens", "total_tokens", "prompt_tokens", "completion_tokens",
                         "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
                         "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation",
                         "input_token_details", "output_token_details", "input_tokens_details",
                         "output_tokens_details", "prompt_token_count", "candidates_token_count",
                         "prompt_tokens_details", "completion_tokens_details", "totalTokens", *_BEDROCK_KEYS})
_warned_keys: set[frozenset[str]] = set()


def _warn_unknown_keys(usage: Mapping[Any, Any]) -> None:
    """A usage dict none of whose keys tokenspy knows (a typo, another provider's shape): it reports
    nothing, and the call's counts are estimated. Said once per set of keys, never silently."""
    keys = frozenset(str(key) for key in usage)
    if keys & _KNOWN_KEYS or keys in _warned_keys or len(_warned_keys) >= 64:
        return
    _warned_keys.add(keys)
    warn_user(f"tokenspy: a usage report with no field tokenspy knows ({', '.join(sorted(keys))}); nothing was "
              "taken from it, and the call's tokens are estimated. By hand, pass set_usage(input_tokens=..., "
              "output_tokens=...).")
