"""The process-wide handler slot behind `tokenspy.set_handler(handler)`.

LangChain has no global callback API; its configure hook (`register_configure_hook`) adds
`var.get()` to every run's callback manager when it is not None, skipping it when that very handler
is already attached (so passing the handler explicitly as well still counts each call once).

Registered once, here at import: langchain-core keeps its hook list forever and scans it on every
run, so registering per `set_handler` would grow it. A ContextVar set in one context is invisible to
plain `threading.Thread` workers (new threads start from defaults, reference §4.3), and a ContextVar's
default is fixed at creation, while `set_handler` installs and replaces handlers later. The hook only
ever calls `.get()`, so it gets a ContextVar-like slot whose default is the process-wide handler: a
value set in a context (none today; kept for scoped use) wins, else every thread and task sees the
global one.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

from langchain_core.tracers.context import register_configure_hook

if TYPE_CHECKING:
    from langchain_core.callbacks import BaseCallbackHandler

__all__ = ["get_global", "set_global"]


class _HandlerSlot:
    """A ContextVar whose default can change: `get()` is all LangChain's configure hook uses."""

    __slots__ = ("default", "var")

    def __init__(self) -> None:
        self.var: ContextVar[BaseCallbackHandler | None] = ContextVar("tokenspy_langchain_handler",
                                                                      default=None)
        self.default: BaseCallbackHandler | None = None

    def get(self) -> BaseCallbackHandler | None:
        value = self.var.get()
        return value if value is not None else self.default


_slot = _HandlerSlot()
register_configure_hook(cast("ContextVar[Any]", _slot), inheritable=True)


def set_global(handler: BaseCallbackHandler | None) -> None:
    _slot.default = handler


def get_global() -> BaseCallbackHandler | None:
    return _slot.default
