"""tokenspy's engine: usage normalization, the call lifecycle, attribution spans, pricing, tracking.

It imports no LLM framework and no provider SDK: adapters in the `tokenspy` package translate their
events into these calls.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from . import spans as _spans
from .budget import Budget, BudgetExceededError
from .call import CURRENT, Call, CallRecord, MergedCall, active_call, config
from .pricing import PriceBook
from .spans import Sink, Span, current_span, use_span
from .tracker import PRICES, Tracker, default_tracker, home_of
from .usage import (
    Usage,
    UsageReport,
    usage_from_anthropic,
    usage_from_any,
    usage_from_gemini,
    usage_from_langchain,
    usage_from_openai,
)

__all__ = [
    "PRICES",
    "Budget",
    "BudgetExceededError",
    "Call",
    "CallRecord",
    "MergedCall",
    "PriceBook",
    "Sink",
    "Span",
    "Tracker",
    "Usage",
    "UsageReport",
    "active_call",
    "config",
    "current_span",
    "default_tracker",
    "start_call",
    "usage_from_anthropic",
    "usage_from_any",
    "usage_from_gemini",
    "usage_from_langchain",
    "usage_from_openai",
    "use_span",
]


def start_call(
    tracker: Tracker | None, model: str | None, *, merge: bool = False, provider: str | None = None,
    prompt: Any = None, streamed: bool = False, parent: Span | None = CURRENT, sinks: Iterable[Sink] = (),
    operation: str = "chat", tags: Mapping[str, Any] | None = None, tools: Any = None,
) -> Call | MergedCall:
    """Start a call on `tracker` (the default one if None); the other options are `Call`'s.

    With `merge=True` (SDK adapters), a call already active in this context that no other inner layer
    has claimed absorbs this one: the returned view forwards usage into it, so one provider call
    seen by two layers makes one record.
    """
    # Every option named (not forwarded as **kwargs): this runs once per SDK request.
    if merge:
        outer = active_call()
        if outer is not None and outer.claim():
            return MergedCall(outer)
    if tracker is None:
        if _spans.homes:  # a framework handler's span: its tracker and view take the calls made under it
            tracker, sinks = home_of(current_span() if parent is CURRENT else parent, sinks)
        else:
            tracker = default_tracker()
    return Call(tracker, model, provider=provider, prompt=prompt,
                streamed=streamed, parent=parent, sinks=sinks, operation=operation, tags=tags, tools=tools)
