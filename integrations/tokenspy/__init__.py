"""tokenspy: exactly where your LLM tokens and dollars go.

    import tokenspy

    @tokenspy.profile
    def answer(question): ...          # SDK calls inside are tracked, streaming included

    client = tokenspy.observe(OpenAI())                  # or track one client everywhere
    chain.invoke(x, config={"callbacks": [tokenspy.langchain.TokenSpyHandler()]})
    tokenspy.report()                                    # the cost tree, in a box
"""

from __future__ import annotations

from typing import Any, TypeVar

from tokenspy_core import BudgetExceededError, CallRecord, Span, Tracker, Usage, current_span

from ._api import calls, init, record, report, reset, set_handler, set_price, start_call, stats
from ._profile import Session, profile, session

__version__ = "0.1.0"

__all__ = [
    "BudgetExceededError",
    "CallRecord",
    "Session",
    "Span",
    "Tracker",
    "Usage",
    "__version__",
    "calls",
    "current_span",
    "init",
    "observe",
    "profile",
    "record",
    "report",
    "reset",
    "session",
    "set_handler",
    "set_price",
    "start_call",
    "stats",
    "unobserve",
]

C = TypeVar("C")


def observe(client: C, **options: Any) -> C:
    """Track every call made through this openai / anthropic client; returns the same client."""
    from ._observe import observe as _observe

    return _observe(client, **options)


def unobserve(client: C) -> C:
    """Undo `observe(client)`."""
    from ._observe import unobserve as _unobserve

    return _unobserve(client)
