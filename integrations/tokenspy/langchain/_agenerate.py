"""A model call cancelled inside langchain-core's `agenerate` reaches no callback: it runs its model calls
under `asyncio.gather(..., return_exceptions=True)`, and a cancellation of the caller (`asyncio.timeout()`,
a task cancelled) raises out of that gather, past `on_llm_error` and `on_llm_end`. The calls would stay
open for good, and active in the caller's context (its next request merged into one of them).

`BaseChatModel.agenerate` and `BaseLLM.agenerate` are wrapped, once, when the first `TokenSpyHandler` is
made: the model runs a handler starts inside one are noted in a context variable, and a cancellation
leaving it ends those still open (aborted, with what the provider already reported, else the prompt
estimated). Nothing else changes: the result, the exception and the timing are the wrapped method's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tokenspy_core._guard import guarded

from .._sdk_patch import Patches

if TYPE_CHECKING:
    from ._handler import TokenSpyHandler

__all__ = ["install", "started_here"]

# The model runs started by handlers inside the `agenerate` running in this context (None outside one).
started_here: ContextVar[list[tuple[TokenSpyHandler, UUID]] | None] = ContextVar(
    "tokenspy_langchain_agenerate", default=None)
_patches = Patches()  # never undone: a pass-through while no handler ran a model


def install(end_cancelled: Callable[[TokenSpyHandler, UUID], None]) -> None:
    """Wrap the `agenerate` of langchain-core's chat and completion model classes (once per process)."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.language_models.llms import BaseLLM

    for cls in (BaseChatModel, BaseLLM):
        _patches.wrap(cls, "agenerate", functools.partial(_wrap, end_cancelled=end_cancelled))


def _wrap(original: Callable[..., Any], *,
          end_cancelled: Callable[[TokenSpyHandler, UUID], None]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def agenerate(self: Any, *args: Any, **kwargs: Any) -> Any:
        started: list[tuple[TokenSpyHandler, UUID]] = []
        token = started_here.set(started)
        try:
            return await original(self, *args, **kwargs)
        except BaseException as exc:
            if started and type(exc).__name__ == "CancelledError":
                for handler, run_id in started:
                    with guarded("langchain cancelled model call"):
                        end_cancelled(handler, run_id)
            raise
        finally:
            started_here.reset(token)

    return agenerate
