"""A streamed LlamaIndex LLM call is the active call (the one the SDK layer merges into) only while its
stream sends its request: from the first read until the first chunk. Its clock (latency, time to first
token) also starts at that first read, when the request is sent.

LlamaIndex fires a stream's start event when `stream_chat`/`astream_chat` (or `stream_complete`, ...)
hands the generator back, but the provider request is sent only at its first read, after any code
the caller runs in between. Left active in the caller's context, the call would take in whatever SDK
request comes next there: another stream's (two streams created before either is read), or a raw
client's, priced then at the stream's model. So once the generator exists the call is deactivated
in the caller's context, activated again by the first read, in the reader's context (a worker thread
included), and deactivated by its first chunk (`LLMCall.chunk`) or its end, whichever comes first.

The generator users get is LlamaIndex's own (`llm_chat_callback`/`llm_completion_callback` wrap the
LLM's generator in a `wrapped_gen` that fires the in-progress and end events); a span handler cannot
replace it. It reads the LLM's generator through its closure cell `f_return_val`, with a `for` (or
`async for`): that cell's content is swapped, before the first read, for an object whose `__iter__`
(`__aiter__`) activates the call and hands the loop the LLM's generator itself. (Swapping a library
stream's inner iterator, as sentry and langfuse do with the SDKs' `Stream._iterator`.) The loop then
runs on the LLM's generator: no work per chunk. A generator of another shape keeps the call active in
the caller's context until its first chunk or its end.

Activating it around every step instead would also cover a request or an inner LlamaIndex call that a
stream starts after its first chunk (LlamaIndex's LLMs send their one request before it), at the cost
of a context variable set and reset per chunk: ~1.5 µs, 4% of the per-token cost of a `MockLLM` stream.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from types import CellType, CodeType, FunctionType
from typing import Any

from tokenspy_core import Call

__all__ = ["activate_on_first_read"]

_INNER = "f_return_val"  # llama_index.core.llms.callbacks: the LLM's own generator, in `wrapped_gen`


class _FirstRead:
    """What `wrapped_gen`'s loop iterates: the LLM's generator, once the call is active."""

    __slots__ = ("call", "inner")

    def __init__(self, call: Call, inner: Any) -> None:
        self.call = call
        self.inner = inner

    def _activate(self) -> None:
        call = self.call
        if not call.ended:  # ended unread (the handlers uninstalled): would hide the caller's active call
            # The request goes out now: the time the caller held the generator unread is not latency.
            call.restart_clock()
            call.activate()

    def __iter__(self) -> Iterator[Any]:
        self._activate()
        return iter(self.inner)

    def __aiter__(self) -> AsyncIterator[Any]:
        self._activate()
        return aiter(self.inner)


def _inner_cell(stream: Any, code: CodeType) -> CellType | None:
    """The closure cell `stream`'s code reads the LLM's generator from, if it has one."""
    if _INNER not in code.co_freevars:
        return None
    # A generator's frame holds its function (CPython), whose closure holds the cells.
    for ref in gc.get_referents(stream):
        if type(ref) is FunctionType and ref.__code__ is code and ref.__closure__:
            return ref.__closure__[code.co_freevars.index(_INNER)]
    return None


def activate_on_first_read(stream: Any, call: Call) -> bool:
    """Make the first read of `stream` (not started yet) activate `call` where it runs.

    False, and nothing changed, if `stream` is not LlamaIndex's stream wrapper.
    """
    agen = getattr(stream, "ag_code", None)
    code = agen if agen is not None else getattr(stream, "gi_code", None)
    if type(code) is not CodeType:
        return False
    cell = _inner_cell(stream, code)
    if cell is None:
        return False
    try:
        inner = cell.cell_contents
    except ValueError:  # an empty cell: not the shape this expects
        return False
    if not hasattr(inner, "__anext__" if agen is not None else "__next__"):
        return False
    cell.cell_contents = _FirstRead(call, inner)
    return True
